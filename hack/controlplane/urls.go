package main

import (
	"fmt"
	"net/url"
	"strings"
)

func parseURLs(list string) ([]url.URL, error) {
	var out []url.URL
	for _, s := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("bad URL %q: %w", s, err)
		}
		out = append(out, *u)
	}
	return out, nil
}
