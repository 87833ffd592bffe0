from mcp_swarm.cli import main

main()
