"""The test helper that keeps Ray's forwarded worker lines out of our own CLI output."""

from tests.support.console import own_output


def test_worker_lines_and_colours_are_dropped_and_ours_kept() -> None:
    printed = (
        "error: index region reaches recall@10 0.85 < floor 0.99; not published\n"
        "\x1b[36m(ListFiles pid=10533)\x1b[0m Traceback (most recent call last):\n"
        "\x1b[36m(MapBatches(TileEmbedder) pid=3, ip=127.0.0.1)\x1b[0m InterruptedError\n"
        "(pid=12) raise X\n"
        "Traceback in our own code (pid=5) stays\n"
    )
    kept = own_output(printed).splitlines()
    assert kept == [
        "error: index region reaches recall@10 0.85 < floor 0.99; not published",
        "Traceback in our own code (pid=5) stays",
    ]
