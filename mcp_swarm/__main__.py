from mcp_swarm.cli.main import main

main()
