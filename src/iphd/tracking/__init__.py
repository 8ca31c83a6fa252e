"""Person tracking: ground-plane constant-velocity Kalman filter, assignment, appearance re-ID."""
