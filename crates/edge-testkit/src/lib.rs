//! edge-testkit
