"""The main job: every pending migration measured, checked and summarised, one at a time."""
