"""retrofit domain pack `codegen`: Code language models, judged by the speed of the correct code they write (not built yet: issue 6)."""
