//! edge-bus
