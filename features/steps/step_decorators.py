"""behave's step decorators, typed (behave ships no annotations), for every step module."""

from collections.abc import Callable
from typing import cast

import behave

StepFunction = Callable[..., None]
StepDecorator = Callable[[StepFunction], StepFunction]


def given(pattern: str) -> StepDecorator:
    return cast(StepDecorator, behave.given(pattern))


def when(pattern: str) -> StepDecorator:
    return cast(StepDecorator, behave.when(pattern))


def then(pattern: str) -> StepDecorator:
    return cast(StepDecorator, behave.then(pattern))


def step(pattern: str) -> StepDecorator:
    """A step usable as Given, When or Then."""
    return cast(StepDecorator, behave.step(pattern))
