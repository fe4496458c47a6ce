"""The node's services: scp, indexer, mover, api, and the command line that starts them."""
