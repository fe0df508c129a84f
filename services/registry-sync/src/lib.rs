//! registry-sync
