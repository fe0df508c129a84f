//! site-manager
