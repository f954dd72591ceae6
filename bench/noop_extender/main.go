// A kube-scheduler extender that does nothing but speak the protocol: every node passes, every node
// scores 5. bench/extender.py runs kube-scheduler with it to measure what the extender protocol itself
// costs (the HTTP round trips and JSON on kube-scheduler's side), the floor any extender starts from.
// Standard library only, so it builds from the Go toolchain alone.
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

// Requests served per verb, read by the benchmark (GET /stats) to prove kube-scheduler consulted it:
// an ignorable extender that failed would make a run look fast.
var served struct{ filter, prioritize atomic.Int64 }

type args struct {
	NodeNames *[]string `json:"NodeNames"`
}

type filterResult struct {
	NodeNames                  *[]string         `json:"NodeNames"`
	FailedNodes                map[string]string `json:"FailedNodes"`
	FailedAndUnresolvableNodes map[string]string `json:"FailedAndUnresolvableNodes"`
	Error                      string            `json:"Error"`
}

type hostPriority struct {
	Host  string `json:"Host"`
	Score int64  `json:"Score"`
}

func decode(w http.ResponseWriter, r *http.Request) (args, bool) {
	var a args
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil || a.NodeNames == nil {
		http.Error(w, "expected ExtenderArgs with NodeNames (nodeCacheCapable: true)", http.StatusBadRequest)
		return a, false
	}
	return a, true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("write: %v", err)
	}
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: noop-extender HOST:PORT")
	}
	http.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := decode(w, r); ok {
			served.filter.Add(1)
			reply(w, filterResult{NodeNames: a.NodeNames, FailedNodes: map[string]string{}, FailedAndUnresolvableNodes: map[string]string{}})
		}
	})
	http.HandleFunc("/prioritize", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := decode(w, r); ok {
			served.prioritize.Add(1)
			out := make([]hostPriority, len(*a.NodeNames))
			for i, n := range *a.NodeNames {
				out[i] = hostPriority{Host: n, Score: 5}
			}
			reply(w, out)
		}
	})
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]int64{"filter": served.filter.Load(), "prioritize": served.prioritize.Load()})
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
