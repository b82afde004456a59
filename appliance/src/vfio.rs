//! Binding GPUs (whole IOMMU groups) to vfio-pci through sysfs (being written).
