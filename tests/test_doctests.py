"""The examples in the docstrings of the core modules run and give what they show."""

import doctest

import pytest

import bayes_gmm._gaussian
import bayes_gmm.datasets
import bayes_gmm.em
import bayes_gmm.priors


@pytest.mark.parametrize(
    "module", [bayes_gmm.em, bayes_gmm.priors, bayes_gmm._gaussian, bayes_gmm.datasets]
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
