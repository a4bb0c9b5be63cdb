"""Paper section 2: find the closest normal face (inversion, Algorithm 1; model adaptation, Algorithm 2)."""
