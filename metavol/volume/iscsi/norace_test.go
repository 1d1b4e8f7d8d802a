//go:build !race

package iscsi

const raceBuild = false
