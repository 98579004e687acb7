package connector

import "context"

// SetAfterImport sets a function run between a successful import request
// and the recording of its ids.
func (c *Connector) SetAfterImport(f func(ctx context.Context)) { c.afterImport = f }
