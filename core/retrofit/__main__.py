from retrofit.cli import run

run()
