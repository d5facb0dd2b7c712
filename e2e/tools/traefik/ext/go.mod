// The nested module github.com/traefik/traefik/dynamic/ext, which Traefik's go.mod replaces with
// its directory ./pkg/config/dynamic/ext. A nested module is never part of the parent's module zip,
// so build-e2e-bins.sh copies this stand-in there (see ext.go).
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
