"""retrofit domain pack `depth`: MiDaS/DPT depth models, judged by the share of pixels off by more than X % (not built yet: issue 4)."""
