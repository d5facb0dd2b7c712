// Command etcd is upstream etcd's server main. etcd's server module carries replace directives, so
// `go install` refuses it; this wrapper module pins it instead (see go.mod).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
