"""A tiny flow, deployed from Git: only the standard library, so the stock runner
image runs it from this source (shipped in a ConfigMap next to it). Version 2."""


def hello(name: str = "world", excited: bool = False) -> str:
    greeting = f"Hello, {name}"
    return greeting + "!" if excited else greeting + "."
