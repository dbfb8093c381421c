"""rl: power-mean policy losses, advantages, environments, trainer, studies and the CLI."""
