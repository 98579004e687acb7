package gcs

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labelsync/labelsync/internal/fault"
)

// Sentinels every error of this package is classified with. All six are
// permanent: retrying the same call with the same input cannot succeed.
var (
	// ErrNotFound: the bucket, object or object generation does not exist.
	// For a generation that is permanent; a newer generation may exist.
	ErrNotFound = errors.New("gcs: not found")
	// ErrPermission: the principal lacks an IAM permission (HTTP 403).
	ErrPermission = errors.New("gcs: permission denied")
	// ErrUnauthenticated: Cloud Storage did not accept the credentials
	// (HTTP 401).
	ErrUnauthenticated = errors.New("gcs: unauthenticated")
	// ErrBadCredentials: the credentials are malformed, of an unsupported
	// kind, missing (no Application Default Credentials), or refused by the
	// token endpoint.
	ErrBadCredentials = errors.New("gcs: invalid credentials")
	// ErrTooLarge: the object is bigger than the caller's limit.
	ErrTooLarge = errors.New("gcs: object too large")
	// ErrBadRequest: GCS refused the request as made (HTTP 400), as it does
	// for a requester-pays bucket when the storage has no
	// google_project_id. The same request fails the same way every time.
	ErrBadRequest = errors.New("gcs: bad request")
)

var permanent = []error{ErrNotFound, ErrPermission, ErrUnauthenticated, ErrBadCredentials, ErrTooLarge, ErrBadRequest}

// classified keeps the original error's text and chain and adds the
// sentinel, so errors.Is works for both and messages stay as GCS wrote them.
type classified struct {
	kind error
	err  error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.kind, e.err} }

// Classify wraps a storage, googleapi, auth or gRPC error with the sentinel
// it stands for: 404 and storage.ErrObjectNotExist / ErrBucketNotExist →
// ErrNotFound, 403 → ErrPermission, 401 → ErrUnauthenticated, a token
// endpoint refusing the credentials → ErrBadCredentials, 400 →
// ErrBadRequest. Other errors, and
// errors already classified, are returned unchanged; nil stays nil.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	for _, p := range permanent {
		if errors.Is(err, p) {
			return err
		}
	}
	if kind := kindOf(err); kind != nil {
		return &classified{kind: kind, err: err}
	}
	return err
}

func kindOf(err error) error {
	if errors.Is(err, storage.ErrObjectNotExist) || errors.Is(err, storage.ErrBucketNotExist) {
		return ErrNotFound
	}
	// Checked before googleapi.Error: a token fetch failure reaches the
	// caller wrapped in the API call's error, and is about the credentials,
	// not the bucket.
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		switch ae.Response.StatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return ErrBadCredentials
		}
		return nil
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch ge.Code {
		case http.StatusNotFound:
			return ErrNotFound
		case http.StatusForbidden:
			return ErrPermission
		case http.StatusUnauthorized:
			return ErrUnauthenticated
		case http.StatusBadRequest:
			return ErrBadRequest
		}
		return nil
	}
	// gRPC transport (storage.NewGRPCClient), should a caller use one.
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.NotFound:
			return ErrNotFound
		case codes.PermissionDenied:
			return ErrPermission
		case codes.Unauthenticated:
			return ErrUnauthenticated
		case codes.InvalidArgument:
			return ErrBadRequest
		}
	}
	return nil
}

// Transient reports whether retrying the same call later may succeed:
// timeouts, cancellation, HTTP 408/429/5xx (from GCS or the token endpoint),
// gRPC Unavailable/ResourceExhausted/Internal/Aborted, and connection
// failures. Everything classified with a sentinel of this package, other
// 4xx answers, and unknown errors are permanent.
//
// A cancelled context counts as transient: the call did not fail on its own
// (typically the process is shutting down), so the input must be retried,
// not dead-lettered.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	for _, p := range permanent {
		if errors.Is(err, p) {
			return false
		}
	}
	if kindOf(err) != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		return retryableHTTP(ae.Response.StatusCode)
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return retryableHTTP(ge.Code)
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		switch s.Code() {
		case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.Aborted, codes.DeadlineExceeded:
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// The client library's own list: unexpected EOF, closed connections,
	// stalled reads, and the socket errors it recognises by text.
	return storage.ShouldRetry(err)
}

// isPrecondition reports an HTTP 412 (or gRPC FailedPrecondition): a
// conditional request found another generation.
func isPrecondition(err error) bool {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code == http.StatusPreconditionFailed
	}
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.FailedPrecondition
}

func retryableHTTP(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 && code < 600
}

// Fault classifies err in package fault's vocabulary: the permanent
// sentinels of this package become permanent faults with their codes
// (ErrNotFound → not_found, ErrPermission → permission_denied,
// ErrUnauthenticated and ErrBadCredentials → bad_credentials, ErrTooLarge →
// too_large, ErrBadRequest → bad_input), a Transient error becomes fault.Unavailable (a context that
// ended is left as it is, for fault.Of to read as a shutdown). Anything else
// is returned unchanged: unclassified.
func Fault(err error) error {
	err = Classify(err)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return fault.Permanent(fault.NotFound, err)
	case errors.Is(err, ErrPermission):
		return fault.Permanent(fault.PermissionDenied, err)
	case errors.Is(err, ErrUnauthenticated), errors.Is(err, ErrBadCredentials):
		return fault.Permanent(fault.BadCredentials, err)
	case errors.Is(err, ErrTooLarge):
		return fault.Permanent(fault.TooLarge, err)
	case errors.Is(err, ErrBadRequest):
		return fault.Permanent(fault.BadInput, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case Transient(err):
		return fault.Transient(fault.Unavailable, err)
	}
	return err
}
