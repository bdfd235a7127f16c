"""The checkout's folders, for tests at any depth under tests/ (each test lives in the folder of the package it tests)."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
RECIPES = os.path.join(REPO, "recipes")
FIXTURES = os.path.join(TESTS, "fixtures")  # reference numbers made once by upstream code, read by the tests
