package bench

import (
	"errors"
	"syscall"
)

// fakeGCSXattr is the extended attribute in which fake-gcs-server's
// filesystem backend keeps an object's metadata, where the filesystem
// supports user attributes.
const fakeGCSXattr = "user.metadata"

// xattrSupported reports whether fake-gcs-server will keep metadata in
// extended attributes under root: it decides by reading the attribute of the
// root directory, and uses them when that succeeds or finds no attribute.
func xattrSupported(root string) bool {
	_, err := syscall.Getxattr(root, fakeGCSXattr, nil)
	return err == nil || errors.Is(err, syscall.ENODATA)
}

func setXattr(path string, value []byte) error {
	return syscall.Setxattr(path, fakeGCSXattr, value, 0)
}
