// etcd, built from the published go.etcd.io/etcd/server/v3 module: the storage of the tests'
// kube-apiserver (scripts/ci-setup-kube.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
