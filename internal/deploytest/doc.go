// Package deploytest checks the deployment and observability files against
// the code they deploy and observe; it has tests only.
//
//   - docker-compose.yml loads with compose-go, and every image, build
//     target, port, volume, dependency and variable resolves.
//   - deploy/terraform parses with the HCL library, is formatted as
//     `terraform fmt` formats, declares every reference and documents every
//     variable; its outputs name only the worker's and exporter's variables.
//   - deploy/grafana/labelsync.json and deploy/prometheus/alerts.yml name
//     only metrics and labels that the binaries export (package metrics and
//     the Go and process collectors).
//   - promtool checks and unit-tests the alert rules, and a real Prometheus
//     server scraping an in-process worker and exporter evaluates every
//     dashboard and alert expression: each parses, and the core panels
//     return data, so a renamed metric breaks a test, not the dashboard.
//
// The Prometheus tests need Debian's `prometheus` package (prometheus and
// promtool on PATH). Without it they skip, unless
// LABELSYNC_REQUIRE_PROMETHEUS=1 (CI sets it) turns the skip into a
// failure.
package deploytest
