"""retrofit domain pack `depth`: retrofit MiDaS/DPT depth models for the share of pixels off by more than X %."""
