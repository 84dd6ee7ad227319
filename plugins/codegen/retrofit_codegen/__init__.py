"""retrofit domain pack `codegen`: retrofits code language models for the speed of the correct code they
write (decoding knobs, a sandboxed speed judge, `retrofit codegen check`; see docs/codegen.md)."""
