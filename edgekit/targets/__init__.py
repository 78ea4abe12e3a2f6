"""What a build aims at: device profiles and the format table (TOML data)."""
