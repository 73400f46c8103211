//! VFIO type1 backend for `vfio-hal` — **not implemented yet**.
//!
//! This crate will hold the container (`/dev/vfio/vfio`), group
//! (`/dev/vfio/N`) and device-fd implementation of the `vfio-hal` traits,
//! plus the KVM-VFIO pseudo device. Until then it exports nothing, so that
//! nobody can mistake it for a working backend. Track issue 6.
