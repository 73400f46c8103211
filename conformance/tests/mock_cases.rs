//! The conformance suite against the mock backend, one `#[test]` per case.

use vfio_hal::{ErrorKind, IovaRange};
use vfio_hal_mock::conformance::MockFixture;
use vfio_hal_mock::IommuConfig;

vfio_hal_conformance::conformance_tests!(mock, MockFixture::new());

// The same suite on a differently shaped IOMMU: split unmaps allowed (so the
// declared-capability case runs its other branch), a 4 GiB aperture with no
// hole (the last-page and outside-range cases hit other edges), and room for
// only 16 mappings.
vfio_hal_conformance::conformance_tests!(
    mock_split_4g,
    MockFixture::with_config(
        "mock-split-4g",
        IommuConfig {
            iova_ranges: vec![IovaRange {
                start: 0,
                end: 0xffff_ffff,
            }],
            max_mappings: 16,
            allow_split_unmap: true,
            ..IommuConfig::default()
        },
    )
);

#[test]
fn declared_capabilities_follow_the_configuration() {
    use vfio_hal_conformance::{Fixture, SplitUnmap};
    assert_eq!(
        MockFixture::new().capabilities().split_unmap,
        SplitUnmap::Refused(ErrorKind::InvalidArgument)
    );
    let split = MockFixture::with_config(
        "split",
        IommuConfig {
            allow_split_unmap: true,
            ..IommuConfig::default()
        },
    );
    assert_eq!(split.capabilities().split_unmap, SplitUnmap::Allowed);
}
