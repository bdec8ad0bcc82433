"""Who is in the model: where each expert stands (status), adding experts for new data (grow), and retiring one."""
