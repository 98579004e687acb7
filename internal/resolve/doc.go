// Package resolve opens source-storage objects for viewers (SPEC §4):
// GET /projects/{project}/resolve/?fileuri=… on the worker, as Label
// Studio's frontend calls it, and POST /api/resolve/sign, which issues
// signed links.
//
// Authentication comes first: the API's bearer token (LABELSYNC_API_TOKEN,
// compared in constant time), or a signed link's expires and sig
// parameters (Links). Without either the answer is 401, whatever the
// object.
//
// Decoding: fileuri is the query parameter as net/url decoded it, once.
// A value that does not start with gs:// is URL-safe base64 (padded or
// not) of one. The object key is then used byte for byte: it is never
// percent-decoded again and never Unicode-normalised, so it is exactly the
// raw object name task events carry. Keys with ".", ".." or empty
// segments, backslashes, control characters, invalid UTF-8, or the
// percent-escapes of "/", "\", "." and "%" are refused (ParseFileURI).
//
// Confinement: an object resolves only if one of the project's source
// storages contains it by its own rules: the same bucket, under its
// normalised prefix (compared byte for byte), and passing its recursive
// scan and regex filter. Everything else — other buckets, other projects,
// refused keys, other schemes — is 404 with one fixed body, the same as
// for an object that does not exist. When several storages contain the
// object, the longest prefix decides (ties: the lowest id): its presign
// setting and its credentials. Storages are read from the current
// snapshot on every request, so a PATCH applies to the next one.
//
// presign on: 303 to a V4 signed GET URL valid presign_ttl minutes, with
// Cache-Control: no-store. The storage client signs with a service-account
// key, or through IAM signBlob as the service account its credentials
// name. With an emulator, which ignores signatures, the URL is signed with
// the storage's own key or a throwaway one and points at the emulator's
// media endpoint, so that the local stack's redirects open. Signed URLs
// are cached for at most half their
// lifetime and never served with less than a minute left; the cache is
// keyed by a fingerprint of the deciding storage's id, presign,
// presign_ttl, google_project_id and sealed credentials, so a change of
// any of them signs afresh, and it is bounded. In presign mode the object
// is not looked up: a missing object inside a storage redirects, and GCS
// answers 404.
//
// presign off: the object is streamed through the worker without being
// held in memory, one generation from start to end, with GCS's
// Content-Type, Content-Length, ETag and Last-Modified, Range (one range;
// several are answered with the whole object) and conditional requests
// (304). Each upstream step must make progress within the read timeout
// (DefaultReadTimeout). The status goes out with the first byte of the
// body, so an object that cannot be opened is still answered 404 (gone
// meanwhile) or 502. If the upstream read breaks once the body has begun,
// the failure is logged and the connection aborted, so that no client
// takes a truncated body for a complete one.
//
// Concurrency: a Server is safe for concurrent use; each request reads
// its own storages snapshot.
package resolve
