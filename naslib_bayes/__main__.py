from naslib_bayes.cli import run_program

run_program()
