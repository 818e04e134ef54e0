package main

import (
	"encoding/json"
	"log"
	"net/http"
	"sync"
	"time"
)

type counter struct {
	mu     sync.Mutex
	counts map[string]int
	reset  time.Time
}

func (c *counter) allow(key string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().After(c.reset) {
		c.counts = make(map[string]int)
		c.reset = time.Now().Add(time.Minute)
	}
	c.counts[key]++
	return c.counts[key] <= limit
}

func main() {
	c := &counter{counts: make(map[string]int), reset: time.Now().Add(time.Minute)}
	http.HandleFunc("/v1/chat", func(w http.ResponseWriter, r *http.Request) {
		if !c.allow(r.RemoteAddr, 60) {
			w.WriteHeader(http.StatusTooManyRequests)
			json.NewEncoder(w).Encode(map[string]string{"error": "rate limited"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "at": time.Now().Unix()})
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
