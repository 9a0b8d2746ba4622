"""A map task over a cached task, a dynamic fan-out, and a task with retries — written with flytekit,
packaged with `pyflyte package`, run by Updraft."""

import typing

from flytekit import dynamic, map_task, task, workflow


@task(cache=True, cache_version="1")
def square(x: int) -> int:
    return x * x


@task
def total(xs: typing.List[int]) -> int:
    return sum(xs)


@dynamic
def first_squares(n: int) -> typing.List[int]:
    # The shape of this sub-workflow is known only at run time: one node per k.
    return [square(x=k) for k in range(1, n + 1)]


@task(retries=2)
def describe(mapped: int, dynamic: int, name: str) -> str:
    return f"hello {name}: {mapped} from the map, {dynamic} from the dynamic task"


@workflow
def hello(numbers: typing.List[int] = [1, 2, 3, 4], n: int = 3, name: str = "world") -> str:
    mapped = total(xs=map_task(square)(x=numbers))
    dynamic = total(xs=first_squares(n=n))
    return describe(mapped=mapped, dynamic=dynamic, name=name)
