# A site module may not add rules to the bundle's packages.
package haven.participate

extra := true
