//! libvirt's XML formats to and from the typed model (placeholder; being written).
