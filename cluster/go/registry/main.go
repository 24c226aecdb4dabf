// Command registry is CNCF Distribution's registry with only the filesystem storage
// driver the local cluster uses: the same `registry serve CONFIG` as upstream's
// cmd/registry, without compiling the S3, Azure and GCS SDKs of the cloud drivers.
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	// RootCmd exits non-zero by itself when `serve` fails.
	_ = registry.RootCmd.Execute()
}
