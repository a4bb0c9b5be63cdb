"""Paper section 1: photo in, aligned face with landmarks, pose, transform and region masks out."""
