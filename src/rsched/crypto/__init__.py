"""Field-level encryption: MultiFernet over a key list, newest first."""
