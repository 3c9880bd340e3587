"""The tiny synthetic world the demo and the tests run on: the suite generator and the tiny base model builder."""
