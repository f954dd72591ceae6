// Command kube-all is one binary holding etcd, kube-apiserver, kube-scheduler and
// kube-controller-manager. Linking the four together shares almost all compilation,
// which roughly thirds the cold build on a 2-core machine compared with four binaries.
//
// The component is chosen by the name the binary is invoked under (the build creates
// symlinks named after each component), or else by the first argument.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func run(name string) (int, bool) {
	switch name {
	case "etcd":
		etcdmain.Main(os.Args)
		return 0, true
	case "kube-apiserver":
		return cli.Run(apiserver.NewAPIServerCommand()), true
	case "kube-scheduler":
		return cli.Run(scheduler.NewSchedulerCommand()), true
	case "kube-controller-manager":
		return cli.Run(controllermanager.NewControllerManagerCommand()), true
	}
	return 0, false
}

func main() {
	if code, ok := run(filepath.Base(os.Args[0])); ok {
		os.Exit(code)
	}
	if len(os.Args) > 1 {
		name := os.Args[1]
		os.Args = os.Args[1:]
		if code, ok := run(name); ok {
			os.Exit(code)
		}
	}
	fmt.Fprintln(os.Stderr, "usage: kube-all {etcd|kube-apiserver|kube-scheduler|kube-controller-manager} [flags]")
	os.Exit(2)
}
