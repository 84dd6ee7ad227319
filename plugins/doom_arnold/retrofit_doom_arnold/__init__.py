"""retrofit domain pack `doom`: Arnold-style ViZDoom agents, judged by kills per life and life expectancy (not built yet: issue 5)."""
