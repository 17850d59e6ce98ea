"""Loss modules. Each returns a dict of named parts with the total under 'total'; the methods that use
them (and their keyword arguments' defaults) are in methods/."""
