//! iommufd + VFIO device cdev backend for `vfio-hal` — **not implemented yet**.
//!
//! This crate will hold the `/dev/iommu` IOAS and `/dev/vfio/devices/vfioN`
//! implementation of the `vfio-hal` traits and the automatic choice between
//! it and the legacy backend. Until then it exports nothing, so that nobody
//! can mistake it for a working backend. Track issue 7.
