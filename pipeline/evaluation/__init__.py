"""Paper section 6 and the simulation study: synthetic defects for checking the score."""
