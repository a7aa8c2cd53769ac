module omfloats

go 1.22
