// A kube-scheduler extender that does nothing but speak the protocol: every node passes, every node
// scores 5. bench/extender runs kube-scheduler with it to measure what the extender protocol itself
// costs (the HTTP round trips and JSON on kube-scheduler's side), the floor any extender starts from.
// Both nodeCacheCapable modes: node names, or a NodeList whose items filter echoes back unchanged (as
// kube-scheduler rebuilds its node infos from them). With a certificate and key it serves HTTPS.
// Standard library only, so it builds from the Go toolchain alone.
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
)

// Requests served per verb, read by the benchmark (GET /stats) to prove kube-scheduler consulted it:
// an ignorable extender that failed would make a run look fast.
var served struct{ filter, prioritize atomic.Int64 }

type nodeList struct {
	Items []json.RawMessage `json:"items"`
}

type args struct {
	NodeNames *[]string `json:"NodeNames"`
	Nodes     *nodeList `json:"Nodes"`
}

type filterResult struct {
	NodeNames                  *[]string         `json:"NodeNames"`
	Nodes                      *nodeList         `json:"Nodes"`
	FailedNodes                map[string]string `json:"FailedNodes"`
	FailedAndUnresolvableNodes map[string]string `json:"FailedAndUnresolvableNodes"`
	Error                      string            `json:"Error"`
}

type hostPriority struct {
	Host  string `json:"Host"`
	Score int64  `json:"Score"`
}

type named struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func decode(w http.ResponseWriter, r *http.Request) (args, bool) {
	var a args
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &a)
	}
	if err != nil || (a.NodeNames == nil && a.Nodes == nil) {
		http.Error(w, "expected ExtenderArgs with NodeNames or Nodes", http.StatusBadRequest)
		return a, false
	}
	return a, true
}

func names(a args) ([]string, error) {
	if a.NodeNames != nil {
		return *a.NodeNames, nil
	}
	out := make([]string, len(a.Nodes.Items))
	for i, raw := range a.Nodes.Items {
		var n named
		if err := json.Unmarshal(raw, &n); err != nil {
			return nil, err
		}
		out[i] = n.Metadata.Name
	}
	return out, nil
}

// reply sends v with a Content-Length, as the extender under test does (a streamed encoder would switch
// to chunked transfer above a couple of kilobytes).
func reply(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if _, err := w.Write(body); err != nil {
		log.Printf("write: %v", err)
	}
}

func main() {
	if len(os.Args) != 2 && len(os.Args) != 4 {
		log.Fatal("usage: noop-extender HOST:PORT [CERTFILE KEYFILE]")
	}
	http.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := decode(w, r); ok {
			served.filter.Add(1)
			reply(w, filterResult{
				NodeNames: a.NodeNames, Nodes: a.Nodes,
				FailedNodes: map[string]string{}, FailedAndUnresolvableNodes: map[string]string{},
			})
		}
	})
	http.HandleFunc("/prioritize", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := decode(w, r); ok {
			hosts, err := names(a)
			if err != nil {
				http.Error(w, "Nodes.items[].metadata.name unreadable", http.StatusBadRequest)
				return
			}
			served.prioritize.Add(1)
			out := make([]hostPriority, len(hosts))
			for i, n := range hosts {
				out[i] = hostPriority{Host: n, Score: 5}
			}
			reply(w, out)
		}
	})
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]int64{"filter": served.filter.Load(), "prioritize": served.prioritize.Load()})
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	if len(os.Args) == 4 {
		log.Fatal(http.ListenAndServeTLS(os.Args[1], os.Args[2], os.Args[3], nil))
	}
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
