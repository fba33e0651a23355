"""``python -m bench NAME [options]``: run one experiment (or tool) with its own options.

``python -m bench --list`` prints every experiment and tool with one line each. The rest of the
command line goes to the script untouched, so ``python -m bench conll_benchmark --help`` shows
the script's own help.
"""
import runpy
import sys

import bench


def _usage() -> str:
    width = max(map(len, [*bench.EXPERIMENTS, *bench.COMMANDS]))
    lines = ["usage: python -m bench NAME [options]   (python -m bench NAME --help: the options of NAME)", ""]
    for topic in bench.TOPICS:
        names = [n for n, e in bench.EXPERIMENTS.items() if e.module.split(".")[0] == topic]
        if names:
            lines.append(f"{topic}:")
            lines += [f"  {n:<{width}}  {bench.EXPERIMENTS[n].description}" for n in sorted(names)]
    if bench.SUPPORT:
        lines.append("support files (not experiments):")
        lines += [f"  bench/{path}: {what}" for path, what in sorted(bench.SUPPORT.items())]
    lines.append("tools:")
    lines += [f"  {n:<{width}}  {description}" for n, (_, description) in bench.COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--list", "-l", "--help", "-h"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in bench.COMMANDS:
        module = bench.COMMANDS[name][0]
        return int(__import__(module, fromlist=["cli"]).cli(rest) or 0)
    if name not in bench.EXPERIMENTS:
        close = [n for n in [*bench.EXPERIMENTS, *bench.COMMANDS] if name.replace("-", "_") in n or n in name]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"python -m bench: no experiment named {name!r}{hint}; python -m bench --list names them all", file=sys.stderr)
        return 2
    module = f"bench.{bench.EXPERIMENTS[name].module}"
    # The script sees the command line it would see run as a file: argv[0] its name, then its options.
    sys.argv = [f"python -m bench {name}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
