"""The tests, in folders that mirror the code: library/ (projunn), training/ (train.py and the
training package, the Hydra plugins), tasks/ (tasks), scripts/ (python -m scripts ...); at the top,
what holds across them (the pages' commands, the house's import rules). helpers/ holds what several
test modules share, conftest.py the fixtures. A package, so that tests.training is never the training
package and test modules of one name in two folders do not collide."""
