from shout import shout


def test_shout_builds_on_the_greeter():
    assert shout("ada") == "HELLO, ADA!"
