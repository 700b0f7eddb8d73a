"""Full backup and restore of a pool (DESIGN §7)."""
