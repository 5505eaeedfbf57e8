"""``python -m agent_cli_proxy``: the same command line as the ``agent-cli-proxy`` script."""

from agent_cli_proxy.cli.main import main

if __name__ == "__main__":
    main()
