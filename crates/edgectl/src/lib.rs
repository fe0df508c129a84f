//! edgectl
